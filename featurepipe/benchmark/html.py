"""``report.html``: one self-contained page per benchmark run.

The page holds what ``summary.md`` holds — the same tables (from
:func:`featurepipe.benchmark.report.report_tables`), the dataset description,
the leakage report — plus every figure of the output folder embedded as a
``data:`` URI (the SVG twin when there is one, else the PNG) with a caption
saying what it shows and how it was computed
(:func:`featurepipe.benchmark.plots.figure_caption`), the hyper-parameters
chosen in every fold, the experiment configuration and the versions. It makes
no network request: no external script, style sheet, font or image. A few
lines of inline JavaScript sort a table by the column whose header is
clicked (numbers by value, text alphabetically; cells without a value last).
"""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from ..metrics import METRIC_LABELS
from .plots import figure_caption, figure_files

__all__ = ["html_report", "write_html_report"]

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:2em auto;max-width:80em;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.88em}
th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:left;vertical-align:top}
th{background:#f0f0f0;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.synthetic{background:#fff3cd;border:2px solid #E69F00;padding:0.6em 1em;font-weight:bold}
figure{margin:1.5em 0;border-top:1px solid #eee;padding-top:0.8em}
figure img{max-width:100%;height:auto}
figcaption{font-size:0.9em;color:#333;max-width:60em}
pre{background:#f7f7f7;padding:0.6em;overflow:auto;font-size:0.85em}
.note{font-size:0.9em;color:#444}
"""

# Click a header: sort the rows of its table by that column (data-sort numbers, else text; empty last).
_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    function key(row) {
      var cell = row.cells[col], v = cell.getAttribute("data-sort");
      return v === null ? cell.textContent : (v === "" ? null : parseFloat(v));
    }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
      if (typeof x === "number" && typeof y === "number") { return dir * (x - y); }
      return dir * String(x).localeCompare(String(y));
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def _inline(markdown):
    """Escape ``markdown`` for HTML and turn its inline ``**bold**`` and ``*emphasis*`` into tags."""
    text = html.escape(str(markdown).replace("\\|", "|"), quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", text)


def _bullets(lines):
    """Markdown bullet lines (``- …``) and loose paragraphs as HTML."""
    out, items = [], []
    for line in lines:
        if line.startswith("- "):
            items.append(f"<li>{_inline(line[2:])}</li>")
            continue
        if items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if line.startswith("> "):
            out.append(f'<p class="synthetic">{_inline(line[2:])}</p>')
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    if items:
        out.append("<ul>" + "".join(items) + "</ul>")
    return "\n".join(out)


def _table(header, rows, table_id):
    """A sortable table; ``rows`` are lists of :class:`~featurepipe.benchmark.report.Cell`."""
    head = "".join(f'<th scope="col">{html.escape(h)}</th>' for h in header)
    numeric = [any(row[j].sort_key is not None for row in rows) for j in range(len(header))]
    body = []
    for row in rows:
        cells = []
        for cell, is_number in zip(row, numeric):
            if not is_number:
                cells.append(f"<td>{html.escape(cell.text)}</td>")
            else:  # sorts by its value; a cell without one (n/a) sorts last
                key = "" if cell.sort_key is None else repr(float(cell.sort_key))
                cells.append(f'<td class="num" data-sort="{key}">{html.escape(cell.text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(body) + "\n</tbody></table>")


def _figure(result, png):
    """A ``<figure>``: the SVG twin (else the PNG) as a data URI, and its caption."""
    svg = png.with_suffix(".svg")
    if svg.is_file():
        mime, data, shown = "image/svg+xml", svg.read_bytes(), svg
    else:
        mime, data, shown = "image/png", png.read_bytes(), png
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    caption = figure_caption(result, png.name)
    files = f"{png.name}, {svg.name}" if shown is svg else png.name
    return (f'<figure id="fig-{html.escape(png.stem)}"><img src="{uri}" alt="{html.escape(png.stem)}">'
            f"<figcaption><strong>{html.escape(files)}</strong>: {html.escape(caption)}</figcaption></figure>")


def _tuning_section(result, tuning_rows):
    """Hyper-parameters chosen by the inner grid search in every fold (``tuning_rows``: the report's rows)."""
    rows = [f"<tr><td>{html.escape(name)}</td><td class=\"num\">{repeat}</td><td class=\"num\">{fold}</td>"
            f"<td><code>{html.escape(params)}</code></td>"
            f"<td class=\"num\">{'n/a' if score is None else f'{score:.3f}'}</td></tr>"
            for name, repeat, fold, params, score in tuning_rows]
    if not rows:
        return "<p>No pipeline was tuned (no parameter grids): every fold used the pipelines' stated parameters.</p>"
    grids = "".join(f"<li>{html.escape(name)}: <code>{html.escape(json.dumps(info.get('param_grid')))}</code></li>"
                    for name, info in result.pipelines.items() if info.get("param_grid"))
    return (f"<p>Nested cross-validation: each outer fold's training part was searched with "
            f"{result.config['inner_cv']}-fold inner CV scored by {html.escape(str(result.config['inner_scoring']))}; "
            f"the best parameters were refitted on the whole training part.</p><ul>{grids}</ul>"
            '<table class="sortable" id="tuning"><thead><tr><th>pipeline</th><th>repeat</th><th>fold</th>'
            "<th>chosen parameters</th><th>inner CV score</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def html_report(result, sections, directory=None):
    """The HTML report of a :class:`~featurepipe.benchmark.BenchmarkResult` as a string.

    Parameters
    ----------
    result : BenchmarkResult
    sections : dict
        What the report shows, from :func:`featurepipe.benchmark.report.report_sections` (the same
        tables and lines ``summary.md`` renders; this module only renders them as HTML).
    directory : path-like, optional
        Folder whose figures are embedded (default: ``result.output_dir``; none when both are ``None``).
    """
    metric = sections["metric"]
    directory = directory if directory is not None else result.output_dir
    ds = result.dataset
    title = f"Benchmark on {ds['name']}"
    parts = [f"<h1>{html.escape(title)}</h1>", _bullets(sections["description"]),
             '<p class="note">Click a column header to sort a table by that column (again: reverse).</p>']
    if ds.get("info"):
        parts.append("<h2>Dataset</h2><pre>" + html.escape(json.dumps(ds["info"], indent=1, default=str)) + "</pre>")
    for i, table in enumerate(sections["tables"]):
        section = [f"<h2>{html.escape(table.title)}</h2>" if table.title else "<h2>Results (mean over folds)</h2>"]
        intro = f"<p>{_inline(table.intro)}</p>" if table.intro else ""
        section += [intro if table.intro_first else "", _table(table.header, table.rows, f"table-{i}"),
                    "" if table.intro_first else intro]
        parts.append("\n".join(section))
    others = [METRIC_LABELS[m] for m, rows in result.comparisons.items()
              if rows and m not in (metric, result.config["rank_by"])]
    if others:
        parts.append(f"<p>Paired comparisons of {html.escape(', '.join(others))}: comparisons.csv.</p>")
    parts += ["<h2>Hyper-parameters chosen per fold</h2>", _tuning_section(result, sections["tuning"])]
    figures = figure_files(directory) if directory is not None else []
    parts.append("<h2>Figures</h2>")
    parts += [_figure(result, png) for png in figures] or ["<p>No figures were written (plots=False).</p>"]
    parts += ["<h2>Leakage report</h2>", _bullets(sections["leakage"])]
    failed = sections["failed"]
    if failed:
        parts += ["<h2>Failed folds</h2>", _bullets(failed)]
    parts += ["<h2>Experiment configuration</h2>",
              "<pre>" + html.escape(json.dumps({"config": result.config, "pipelines": result.pipelines},
                                               indent=1, default=str)) + "</pre>",
              "<h2>Environment</h2>", f"<p>{html.escape(sections['environment'])}</p>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title>"
            # No request may leave the page: only inline scripts/styles and data: images are allowed.
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(p for p in parts if p)
            + f"\n<script>{_SCRIPT}</script>\n</body></html>\n")


def write_html_report(result, sections, out_dir=None):
    """Write ``report.html`` into ``out_dir`` (default: ``result.output_dir``), embedding its figures; return the path.

    ``sections``: :func:`featurepipe.benchmark.report.report_sections` of ``result``.

    Works on a fresh result and on one read back with
    :meth:`~featurepipe.benchmark.BenchmarkResult.load` (the figures are read from the folder).
    """
    out_dir = out_dir if out_dir is not None else result.output_dir
    if out_dir is None or not Path(out_dir).is_dir():
        raise FileNotFoundError(f"out_dir {str(out_dir)!r} is not a folder (where report.html and the figures go)")
    out_dir = Path(out_dir)
    path = out_dir / "report.html"
    path.write_text(html_report(result, sections, directory=out_dir), encoding="utf-8")
    return str(path)
